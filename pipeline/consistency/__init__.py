"""The consistency checker: grade labelled chats repeatedly and measure agreement."""
