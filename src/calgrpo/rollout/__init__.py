"""Multi-attempt rollout: chat layout, engines, the attempt loop, attempt records."""
