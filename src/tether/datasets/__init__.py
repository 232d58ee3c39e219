"""Datasets: CSV files imported into database tables and exported back."""
