"""Forms and panels for starting and watching training runs."""
