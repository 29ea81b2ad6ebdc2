"""CLIMB-style clustering of document embeddings: k-means, pruning, super-clusters, cluster table, 2-D map."""
