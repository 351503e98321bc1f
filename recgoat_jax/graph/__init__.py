"""Graphs: the normalised user-item graph and LightGCN propagation (bipartite), item / user kNN
graphs (knn), and the graph-attention layer of the modality branches (gat)."""
