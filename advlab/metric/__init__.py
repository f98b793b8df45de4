"""Epsilon in a learned embedding: triplet networks and an embedding-space threat model.

- `triplet`: embedding nets trained with the triplet loss (batch-hard, semi-hard or all triplets),
  k-NN accuracy and Recall@1, `train_embedding` / `load_embedding` (run directories).
- `embedding_threat`: `EmbeddingPGD`, attacks under ||f(x') - f(x)||_2 <= eps_e (optionally also
  inside a pixel Lp ball), every returned example checked against the constraint.
- `compare`: calibration of eps_e from within- and between-class embedding distances, and pixel-
  versus embedding-space adversarial examples at matched success rates (`advlab analyze embedding`).

Guide: docs/metric.md.
"""

from .embedding_threat import EmbeddingPGD, embedding_attack
from .triplet import (MINING, EmbeddingNet, embed, embedding_quality, knn_predict, load_embedding, mine_triplets,
                      pairwise_distances, recall_at_1, train_embedding, triplet_loss)

__all__ = ["EmbeddingNet", "EmbeddingPGD", "MINING", "embed", "embedding_attack", "embedding_quality",
           "knn_predict", "load_embedding", "mine_triplets", "pairwise_distances", "recall_at_1", "train_embedding",
           "triplet_loss"]
