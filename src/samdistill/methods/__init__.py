"""Distillation methods: each file says what one training step computes."""
