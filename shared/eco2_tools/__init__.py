"""The workshop: what a developer's or operator's machine runs beside the pack, never a pod."""
