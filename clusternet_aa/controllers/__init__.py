"""Level-triggered controllers of the controller-manager."""
