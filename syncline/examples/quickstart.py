"""The README's quickstart as a runnable example (``syncline demo``)."""

from __future__ import annotations

import datetime as dt

import attrs
from rich.console import Console
from rich.table import Table

import syncline
from syncline import F

registry = syncline.EntityRegistry()


@registry.entity("posts", indexes=[("user_id", "created_at")])
@attrs.define
class Post:
    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    likes_count: int = 0
    image_urls: list[str] | None = None


class PostsDao(syncline.Dao):
    """The seed's PostsDao, as plain methods."""

    def user_posts(self, user_id: str, limit: int = 50) -> list[Post]:
        return self.repo(Post).find(F.user_id == user_id, order_by="-created_at", limit=limit)

    def popular(self, min_likes: int) -> list[Post]:
        return self.repo(Post).find(F.likes_count >= min_likes, order_by=F.likes_count.desc())


def run(url: str, console: Console) -> None:
    now = dt.datetime.now(dt.UTC)
    with syncline.open(url, entities=[Post]) as store:
        posts = store.repository(Post)
        posts.upsert_many(
            Post(f"p{i}", f"user{i % 3}", f"post number {i}", now - dt.timedelta(minutes=i),
                 likes_count=i * 7 % 11, image_urls=[f"https://example.org/{i}.png"] if i % 2
                 else None)
            for i in range(12)
        )
        posts.update("p3", content="edited while offline")
        dao = PostsDao(store)
        table = Table(title="latest posts of user1")
        for column in ("id", "content", "likes", "created"):
            table.add_column(column)
        for post in dao.user_posts("user1", limit=5):
            table.add_row(post.id, post.content, str(post.likes_count),
                          post.created_at.strftime("%H:%M:%S"))
        console.print(table)
        console.print(f"{posts.count()} posts stored in {url}, "
                      f"{len(dao.popular(8))} with at least 8 likes")
