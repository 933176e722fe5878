"""The trainer and what runs around it: the multi-replica train step, distribution
strategies and clusters, the training callbacks."""
