"""Command-line front ends: argument parsing and printing only; all logic lives in the packages."""
