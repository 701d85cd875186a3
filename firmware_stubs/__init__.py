"""What runs inside the pump: command handling, therapy scheduling, limits, alarms, event log."""
