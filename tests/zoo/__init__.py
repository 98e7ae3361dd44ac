"""Tests of pyroflows.zoo."""
