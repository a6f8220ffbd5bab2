"""The seed document's Optuna example on this pipeline.

Changed from the original: the import line (``pipeline.compat`` instead of
``optuna``), the data (scikit-learn's digits instead of MNIST: no download),
and the size (4 trials of 3 epochs). Run: ``python examples/seed_optuna.py``.
Each trial is a Ray Tune trial; Tune's results are stored under ``results/``.
"""

from pipeline.compat import optuna
import tensorflow as tf
from tensorflow import keras

def objective(trial):
    model = keras.Sequential()
    
    # Tune number of units
    units = trial.suggest_int('units', 32, 512, step=32)
    model.add(keras.layers.Dense(units, activation='relu'))
    model.add(keras.layers.Dense(10, activation='softmax'))
    
    # Tune learning rate
    lr = trial.suggest_loguniform('learning_rate', 1e-4, 1e-1)
    
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
    
    from sklearn.datasets import load_digits
    x_train, y_train = load_digits(return_X_y=True)
    x_train = x_train / 16.0
    
    model.fit(x_train, y_train, epochs=3, validation_split=0.2, verbose=0)
    
    _, accuracy = model.evaluate(x_train, y_train, verbose=0)
    return accuracy

study = optuna.create_study(direction='maximize')
study.optimize(objective, n_trials=4)

print(study.best_params)
