"""The seed's social app on syncline: posts, messages and users, their DAOs and the queue's.

Compare with the Drift original (``000_d9f4a427b9d30f9a.txt``): the sync columns (status,
error, retry count, local id, local modification time) and the SyncQueue table are gone from the
app's code, because syncline keeps them for every syncing entity.
"""

from syncline.examples.social.daos import MessagesDao, PostsDao, SyncQueueDao, UsersDao
from syncline.examples.social.models import ENTITIES, Message, Post, User, registry

__all__ = ["ENTITIES", "Message", "MessagesDao", "Post", "PostsDao", "SyncQueueDao", "User",
           "UsersDao", "registry"]
