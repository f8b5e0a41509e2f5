"""Storage lifecycle: time partitions created ahead, and retention dropping whole expired partitions."""
