"""The two-way mirror: planner, executor, the two sides and the links between their items."""
