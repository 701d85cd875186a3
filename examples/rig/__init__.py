"""A test engineer's suite against a programmer, on pumps from the itpump pytest plugin."""
