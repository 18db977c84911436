"""ControlNet add-on (placeholder: the add-on helper owns this module)."""
