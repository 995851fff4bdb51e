from datetime import timedelta

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.builders import add_candidate, enrol, saved_campaign, touchpoint
from tests.conftest import Inbox, Tenant


async def test_smoke(
    env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    tenant: Tenant,
    worker: Worker,
    inbox: tuple[Inbox, int],
) -> None:
    campaign = await saved_campaign(
        api,
        tenant,
        [touchpoint(tenant, "One {{ first_name }}"), touchpoint(tenant, "Two", interval_days=2)],
    )
    candidate = await add_candidate(api, tenant)
    await enrol(api, tenant, campaign, candidate)
    r = await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)
    print(r.json())
    await env.sleep(timedelta(days=4))
    msgs = await inbox[0].wait_for(2)
    print([m["Subject"] for m in msgs], [m["Date"] for m in msgs])
    r = await api.get(f"/campaigns/{campaign}/recipients", headers=tenant.admin)
    print(r.json())
