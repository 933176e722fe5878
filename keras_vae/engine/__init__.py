"""The trainer and what runs around it: the multi-replica train step, distribution
strategies and clusters, the training callbacks, and Adam as one fused kernel per variable
(`fused_adam`, for steps that run without XLA)."""
