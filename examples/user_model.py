"""A user's own model function: ``model.builder: examples.user_model:build_model``.

It receives the trial's hyperparameters as a dict (plus ``input_shape`` and
``num_classes`` when it asks for them) and returns a Keras model, compiled or not.
"""

import keras


def build_model(hp, input_shape, num_classes):
    model = keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten()])
    for _ in range(hp.get("blocks", 1)):
        model.add(keras.layers.Dense(hp.get("width", 64), activation="relu"))
        model.add(keras.layers.Dropout(hp.get("dropout", 0.0)))
    model.add(keras.layers.Dense(num_classes, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.get("learning_rate", 1e-3)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
