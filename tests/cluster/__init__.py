"""Tests on the local scale-out cluster (infra/local/cluster.sh), started once for the folder."""
