"""Tools around the product: the demo, `crm-sync ui`, test data, the benchmark."""
