"""One module per lint rule. PS1xx are measured in the shadow; PS2xx read the SQL alone."""
