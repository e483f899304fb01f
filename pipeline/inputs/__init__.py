"""Reading chats and labels from users' files: discovery, decoding, formats, rejects."""
