"""Tools around the node, not part of it: the demo, the DDS test harness, the random-weights command."""
