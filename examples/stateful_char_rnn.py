"""A stateful character RNN: `DynamicUnroll(stateful=True)` learns a small generated text and writes more of it.

Hands-On ML's char-RNN, stateful version: the text is cut into `batch_size` long streams, and row `i` of
every batch continues row `i` of the batch before, so the state a batch ends with is where the next one
starts (`stateful=True`: a fixed batch size, `shuffle=False`, `reset_states()` at each epoch's start).
Generation runs a twin model with a batch of 1, one character per call, its state carrying the context.

Run:  python examples/stateful_char_rnn.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short text, 2 epochs (seconds)")
args = parser.parse_args()
keras.utils.set_random_seed(42)
rng = np.random.default_rng(0)

# A small generated text: sentences from a tiny grammar, so a few epochs learn its words.
SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird"]
VERBS = ["sees", "likes", "finds", "follows", "draws"]
OBJECTS = ["the ball", "a tree", "the river", "some bread", "the moon"]
n_sentences = 150 if args.quick else 3000
text = "".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}. " for _ in range(n_sentences))
chars = sorted(set(text))
char_to_id = {c: i for i, c in enumerate(chars)}
encoded = np.array([char_to_id[c] for c in text], "int32")

batch_size, n_steps = (4, 25) if args.quick else (32, 50)
units, epochs = (32, 2) if args.quick else (128, 10)

# Stateful batches: `batch_size` streams, each cut into consecutive windows; batch k holds window k of
# every stream, so the windows of one row follow each other in the text.
stream_len = (len(encoded) - 1) // batch_size
n_windows = stream_len // n_steps
streams = [encoded[i * stream_len : (i + 1) * stream_len + 1] for i in range(batch_size)]
X = np.stack([[s[k * n_steps : (k + 1) * n_steps] for s in streams] for k in range(n_windows)])
Y = np.stack([[s[k * n_steps + 1 : (k + 1) * n_steps + 1] for s in streams] for k in range(n_windows)])
X, Y = X.reshape(-1, n_steps), Y.reshape(-1, n_steps)  # (n_windows * batch_size, n_steps), batch-ordered


def char_model(batch: int) -> keras.Model:
    """Embedding -> a stateful DynamicUnroll (written as keras.layers.SimpleRNN would be) -> softmax."""
    return keras.Sequential(
        [
            keras.Input((None,), batch_size=batch, dtype="int32"),  # a fixed batch size: stateful=True needs it
            keras.layers.Embedding(len(chars), 16),
            ku.DynamicUnroll(units, return_sequences=True, stateful=True, dropout=0.1, seed=1),
            keras.layers.Dense(len(chars), activation="softmax"),
        ]
    )


class ResetStatesAtEpochStart(keras.callbacks.Callback):
    """Each epoch reads the streams from their start again: begin from zero states."""

    def on_epoch_begin(self, epoch, logs=None):
        for layer in self.model.layers:
            if getattr(layer, "stateful", False):
                layer.reset_states()


model = char_model(batch_size)
model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
history = model.fit(
    X, Y, batch_size=batch_size, epochs=epochs, shuffle=False, callbacks=[ResetStatesAtEpochStart()], verbose=2
)
print(f"{len(text)} characters, {len(chars)} distinct; loss {history.history['loss'][0]:.3f} -> "
      f"{history.history['loss'][-1]:.3f}")  # fmt: skip

# Generation: the same weights in a batch-of-1 stateful model; feed the prompt, then one character at a
# time; the layer's state carries everything read so far.
generator = char_model(1)
generator.set_weights(model.get_weights())
rnn = generator.layers[1]
rnn.reset_states()
prompt, temperature = "the cat ", 0.5
probabilities = generator.predict_on_batch(np.array([[char_to_id[c] for c in prompt]], "int32"))[0, -1]
generated = prompt
for _ in range(60 if args.quick else 300):
    logits = np.log(np.maximum(probabilities, 1e-9)) / temperature
    next_id = rng.choice(len(chars), p=np.exp(logits) / np.exp(logits).sum())
    generated += chars[next_id]
    probabilities = generator.predict_on_batch(np.array([[next_id]], "int32"))[0, -1]
print("generated:", generated)

# The state carries the context: from zero states (`reset_states()`), the same last character predicts
# another distribution for the next one.
rnn.reset_states()
without_context = generator.predict_on_batch(np.array([[next_id]], "int32"))[0, -1]
print(f"next-character probabilities, with vs without the carried state: max difference "
      f"{np.abs(without_context - probabilities).max():.3f}")  # fmt: skip
