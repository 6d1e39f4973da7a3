"""Generation: sampling parameters, stop handling and the one loop every engine runs under."""
