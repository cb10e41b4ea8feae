"""Op costs: the analytic device model (and measured tables)."""
