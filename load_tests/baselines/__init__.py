"""Servers to compare ours with: a naive first deployment and a real peer (LitServe)."""
