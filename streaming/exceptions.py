"""Exceptions raised by the streaming app."""

from django.core.exceptions import ImproperlyConfigured


class WordListError(ImproperlyConfigured):
    """The word list named by WORD_LIST cannot be used."""


class ChannelLayerError(ImproperlyConfigured):
    """The configured channel layer cannot do what a command needs."""
