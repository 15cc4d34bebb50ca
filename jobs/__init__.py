"""Entry points a user runs or submits with `ray job submit`: one module per verb."""
