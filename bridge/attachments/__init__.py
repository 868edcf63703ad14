"""Big attachments by signed, expiring links that pop3bridge serves itself.

`signing` mints and checks link URLs (pure); `templates` puts links into stored webhook bodies
at delivery; `server` is the HTTP listener that streams content from the store.
"""
