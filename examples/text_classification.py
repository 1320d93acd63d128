"""Text classification with padded sentences: `Embedding(mask_zero=True)` -> `DynamicUnroll` -> `Dense`.

In TF1 you padded the word ids, kept a `seq_length` vector and passed it to `dynamic_rnn`. In Keras the
`Embedding(mask_zero=True)` layer turns padding (id 0) into a mask that `DynamicUnroll` receives on its
own: padded steps leave the state unchanged, and with `return_sequences=False` the layer returns each
sentence's last *real* output. The corpus is generated here: no download.

Run:  python examples/text_classification.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_unroll as ku

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="small corpus, 1 epoch (seconds)")
args = parser.parse_args()
keras.utils.set_random_seed(42)
rng = np.random.default_rng(42)

# A tiny synthetic corpus: a review is positive when it has more praising words than complaining ones.
positive = ["great", "good", "excellent", "lovely", "fun", "superb"]
negative = ["bad", "awful", "boring", "poor", "dull", "terrible"]
neutral = ["the", "movie", "plot", "actors", "was", "and", "very", "a", "story", "music", "quite", "it"]
vocabulary = ["<pad>"] + positive + negative + neutral  # id 0 is padding
word_id = {word: index for index, word in enumerate(vocabulary)}


def make_review():
    length = int(rng.integers(3, 16))
    words = list(rng.choice(neutral, size=length))
    praise, complaints = int(rng.integers(0, 4)), int(rng.integers(0, 4))
    while praise == complaints:
        complaints = int(rng.integers(0, 4))
    for word in list(rng.choice(positive, praise)) + list(rng.choice(negative, complaints)):
        words.insert(int(rng.integers(0, len(words) + 1)), word)
    return words, int(praise > complaints)


num_reviews = 300 if args.quick else 3000
reviews, labels = zip(*(make_review() for _ in range(num_reviews)))
max_length = max(len(words) for words in reviews)
ids = np.zeros((num_reviews, max_length), dtype="int32")  # padded with 0 at the end
for row, words in enumerate(reviews):
    ids[row, : len(words)] = [word_id[word] for word in words]
labels = np.array(labels, dtype="float32")
print("example:", " ".join(reviews[0]), "->", "positive" if labels[0] else "negative")
print("padded ids:", ids[0])

model = keras.Sequential(
    [
        keras.Input((None,), dtype="int32"),  # any sentence length: DynamicUnroll needs no fixed T
        keras.layers.Embedding(len(vocabulary), 8, mask_zero=True),  # (batch, time, 8) + a (batch, time) mask
        ku.DynamicUnroll(ku.BasicRNNCell(16 if args.quick else 32)),  # last real output: (batch, units)
        keras.layers.Dense(1, activation="sigmoid"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"])
split = int(0.8 * num_reviews)
model.fit(ids[:split], labels[:split], batch_size=32, epochs=1 if args.quick else 10, verbose=2)
loss, accuracy = model.evaluate(ids[split:], labels[split:], verbose=0)
print(f"held-out accuracy: {accuracy:.2f}")

# The mask at work: extra padding at the end of a sentence does not change its prediction.
sentence = np.array([[word_id[w] for w in ["the", "movie", "was", "great", "and", "fun"]]], dtype="int32")
padded = np.concatenate([sentence, np.zeros((1, 10), dtype="int32")], axis=1)
short, long = model.predict(sentence, verbose=0), model.predict(padded, verbose=0)
print(f"'the movie was great and fun': {short[0, 0]:.3f} unpadded, {long[0, 0]:.3f} with 10 padding ids")
assert np.allclose(short, long, atol=1e-5), "padding changed the prediction: the mask was not applied"
