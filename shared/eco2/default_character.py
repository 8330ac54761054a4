"""The default (is_default) character: granted once per user, on first sight or by a first scan that earns nothing.

One reward id per (user, character) (eco2.rewards.reward_id) and one claim key for it in Redis (keys.reward, the
same key the reward step claims in its final transition): whoever claims it first grants it, and the other path
then never announces it again. First sight is the user's first read of their collection (GET
/api/v1/me/characters, eco2.gateway.history): the gateway writes the grant straight into the rewards store, the
ledger and collection rows any reward gets, so that very response shows it; the rows are keyed by reward id and
(user, character), inserted with ON CONFLICT DO NOTHING, so concurrent first requests (or a scan's grant arriving
through persist as well) leave one grant. Sign-up is not this pack's (the auth service's), and the collection
read is the first moment the pack sees a user that needs the character.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio as aioredis

from eco2 import keys
from eco2.errors import store_call
from eco2.events import GrantedCharacter
from eco2.persist.records import Grant
from eco2.rewards import reward_id as reward_id_of
from eco2.rules import Character, CharacterCatalog

# The claim's value (where a scan's claim holds its job id) and the grant's job id when no scan earned it.
FIRST_SIGHT = "first-sight"
# As long as the reward step keeps its claims (eco2.functions.reward.REWARD_CLAIM_SECONDS).
CLAIM_SECONDS = 30 * 24 * 3600


async def still_missing(
    user_id: str, catalog: CharacterCatalog, client: aioredis.Redis, reward_id: Callable[[str, str], str]
) -> GrantedCharacter | None:
    """The default character if this user was never granted it, else None."""
    default = catalog.default()
    if await store_call(client.exists(keys.reward(reward_id(user_id, default.character_id)))):
        return None
    return GrantedCharacter(character_id=default.character_id, name=default.name, middle_category="")


async def first_sight(user_id: str, default: Character, client: aioredis.Redis) -> Grant:
    """The grant of the default character to a user whose collection lacks it, its reward id claimed.

    The claim is taken if free (SET NX GET, one step); if a scan holds it, the grant carries that scan's job id,
    the same row persist writes from its reward.granted event.
    """
    reward_id = reward_id_of(user_id, default.character_id)
    held = await store_call(client.set(keys.reward(reward_id), FIRST_SIGHT, nx=True, ex=CLAIM_SECONDS, get=True))
    job_id = str(held) if held else FIRST_SIGHT
    return Grant(reward_id, user_id, default.character_id, default.name, "", job_id, datetime.now(UTC))
