"""Tests of the lab's own tooling: labctl and docker-compose.yml."""
