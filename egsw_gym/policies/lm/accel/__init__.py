"""Accelerations of :class:`~egsw_gym.policies.lm.LMPolicy`, each exact to float rounding."""
