"""Pocketflows Sync domain: settings, database, models, sync rules and the job lifecycle."""
