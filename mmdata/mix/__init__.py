"""Mixtures: recipes (`recipe`), their record filters (`filters`) and the planner that turns a recipe into a mixture
(`planner`: exact counts, seeded orders, the index and manifest)."""
