"""Tests of pyroflows.evaluation."""
