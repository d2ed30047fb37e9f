"""The media repository: content store on disk, thumbnailer, and the service that ties
them to the database."""

from homeserver.media.content_store import ContentStore
from homeserver.media.service import MediaFile, MediaService, RemoteMedia

__all__ = ["ContentStore", "MediaFile", "MediaService", "RemoteMedia"]
