"""REST routes (AUTOMATIC1111-compatible /sdapi/v1); they call the same engine functions as the UI."""
