"""Tests of pyroflows.attribution."""
