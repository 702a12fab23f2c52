def test_sync_business_creates_then_reports_unchanged(client) -> None:
    first = client.post("/sync/businesses", json={"external_id": "b-1", "name": "Bakery"})
    assert first.status_code == 200
    assert first.headers["Sync-Outcome"] == "created"
    again = client.post("/sync/businesses", json={"external_id": "b-1", "name": "Bakery"})
    assert again.headers["Sync-Outcome"] == "unchanged"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["updated_at"] == first.json()["updated_at"]
