"""The review workbench (`kefu review`): grades beside their chats, labelling for gold sets, disputes."""

from pipeline.review.app import create_app, serve

__all__ = ["create_app", "serve"]
