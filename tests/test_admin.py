from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.utils import timezone

from streaming.models import Connection, ConnectionState, Via
from streaming.stats import connection_overview
from wordstream_site.asgi import application

pytestmark = pytest.mark.django_db


def midnight():
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def add_row(opened_at, closed_at=None, **fields):
    row = Connection(opened_at=opened_at, process="test:1:abc", **fields)
    if closed_at is not None:
        row.close(closed_at, 1000, 5)
    row.save()
    return row


@pytest.fixture
def known_rows():
    today = midnight()
    minute = timedelta(minutes=1)
    add_row(today + 600 * minute, today + 610 * minute, via=Via.NGINX)
    add_row(today + 605 * minute, today + 607 * minute, via=Via.NODE)
    add_row(today + 606 * minute)  # still open
    # Opens at the instant the second row closed: the peak stays 3.
    add_row(today + 607 * minute, today + 609 * minute)
    add_row(today - 60 * minute, today - 30 * minute)  # yesterday


def test_overview_figures(known_rows):
    overview = connection_overview()
    assert overview.active_now == 1
    assert overview.peak_concurrent == 3
    assert overview.connections_today == 4
    # (10 + 2 + 2 + 30) minutes over 4 closed connections.
    assert overview.average_duration == timedelta(minutes=11)


def test_overview_of_empty_table():
    overview = connection_overview()
    assert overview.active_now == 0
    assert overview.peak_concurrent == 0
    assert overview.connections_today == 0
    assert overview.average_duration is None


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client.force_login(user)
    return client


def test_changelist_shows_overview(admin_client, known_rows):
    response = admin_client.get("/admin/streaming/connection/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<td id="active-now">1</td>' in html
    assert '<td id="peak-concurrent">3</td>' in html
    assert '<td id="connections-today">4</td>' in html
    assert '<td id="average-duration">0:11:00</td>' in html


def test_changelist_filters_and_search(admin_client, known_rows):
    assert admin_client.get("/admin/streaming/connection/?via=node").status_code == 200
    response = admin_client.get("/admin/streaming/connection/?via__exact=node")
    assert response.context["cl"].result_count == 1
    response = admin_client.get("/admin/streaming/connection/?state__exact=open")
    assert response.context["cl"].result_count == 1
    response = admin_client.get("/admin/streaming/connection/?q=test:1")
    assert response.context["cl"].result_count == 5


def test_rows_cannot_be_added(admin_client):
    assert admin_client.get("/admin/streaming/connection/add/").status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_overview_after_real_connections(services):
    def open_client():
        client = WebsocketCommunicator(
            application,
            "/ws",
            headers=[(b"host", b"localhost"), (b"origin", b"http://localhost")],
        )
        client.scope["client"] = ["127.0.0.1", 40000]
        return client

    first, second, third = open_client(), open_client(), open_client()
    for client in (first, second, third):
        assert (await client.connect(timeout=3))[0]
    await first.disconnect()
    fourth = open_client()
    assert (await fourth.connect(timeout=3))[0]
    for client in (second, third):
        await client.disconnect()
    await services.recorder.flush()

    overview = await connection_overview_async()
    assert overview.active_now == 1
    assert overview.peak_concurrent == 3
    assert overview.connections_today == 4
    assert overview.average_duration is not None
    rows = [row async for row in Connection.objects.all()]
    assert sorted(row.state for row in rows) == [ConnectionState.CLOSED] * 3 + [
        ConnectionState.OPEN
    ]
    await fourth.disconnect()


async def connection_overview_async():
    from asgiref.sync import sync_to_async

    return await sync_to_async(connection_overview)()
