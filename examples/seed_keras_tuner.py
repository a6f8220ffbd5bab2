"""The seed document's KerasTuner example on this pipeline.

Changed from the original: the import line (``pipeline.compat`` instead of
``keras_tuner``), the data (scikit-learn's digits instead of MNIST: no
download), and the size (4 trials of 3 epochs). Run: ``python examples/seed_keras_tuner.py``.
Trials run in parallel on Ray Tune; results are stored in
``hyperparam_tuning/random_search`` and a second run reloads them.
"""

from pipeline.compat import keras_tuner as kt
import tensorflow as tf
from tensorflow import keras

def build_model(hp):
    model = keras.Sequential()
    
    # Tune the number of units
    hp_units = hp.Int('units', min_value=32, max_value=512, step=32)
    model.add(keras.layers.Dense(units=hp_units, activation='relu'))
    model.add(keras.layers.Dense(10, activation='softmax'))
    
    # Tune the learning rate
    hp_learning_rate = hp.Choice('learning_rate', values=[0.001, 0.01, 0.1])
    
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=hp_learning_rate),
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
    return model

tuner = kt.RandomSearch(
    build_model,
    objective='val_accuracy',
    max_trials=4,
    executions_per_trial=1,
    directory='hyperparam_tuning',
    project_name='random_search'
)

from sklearn.datasets import load_digits
digits = load_digits()
x, y = digits.data, digits.target
(x_train, y_train), (x_test, y_test) = (x[:1400], y[:1400]), (x[1400:], y[1400:])
x_train, x_test = x_train / 16.0, x_test / 16.0

tuner.search(x_train, y_train, epochs=3, validation_split=0.2)

best_hps = tuner.get_best_hyperparameters(num_trials=1)[0]
print(f"Best units: {best_hps.get('units')}")
print(f"Best learning rate: {best_hps.get('learning_rate')}")
