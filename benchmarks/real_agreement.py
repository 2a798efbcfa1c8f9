"""The shipped digit classifier against the bundled digits' own labels: class agreement overall and per class, the
ceiling a conditional generator's agreement is read against (benchmarks/recipe/real-digits-agreement.json):

    python benchmarks/real_agreement.py > benchmarks/recipe/real-digits-agreement.json
"""
import json

import numpy as np

from vitgan.data.builtin import load_mnist5k
from vitgan.metrics.digits import agreement_by_class, class_agreement, classify, load_classifier

data = load_mnist5k()
_, probs = classify(load_classifier(), data.images)
predicted, labels = probs.argmax(1), np.asarray(data.labels)
print(json.dumps({"images": len(labels), **class_agreement(predicted, labels),
                  "by_class": {int(k): v for k, v in agreement_by_class(predicted, labels).items()},
                  # row k: how the real k's were read
                  "confusion": [np.bincount(predicted[labels == k], minlength=10).tolist() for k in range(10)]}))
