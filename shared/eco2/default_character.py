"""The default (is_default) character: granted once, by a user's first scan that earns no category character.

Its reward id is claimed by the reward step's final transition like any other (eco2.functions.reward.RewardStep.finish),
so eco2.reward.granted for it goes out once; this module only tells whether the user still lacks it.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from eco2 import keys
from eco2.errors import store_call
from eco2.events import GrantedCharacter
from eco2.rules import CharacterCatalog


async def still_missing(
    user_id: str, catalog: CharacterCatalog, client: aioredis.Redis, reward_id: Callable[[str, str], str]
) -> GrantedCharacter | None:
    """The default character if this user was never granted it, else None."""
    default = catalog.default()
    if await store_call(client.exists(keys.reward(reward_id(user_id, default.character_id)))):
        return None
    return GrantedCharacter(character_id=default.character_id, name=default.name, middle_category="")
