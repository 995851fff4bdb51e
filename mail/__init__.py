"""Pure e-mail code: templates and their sandbox, signed links, MIME and SMTP.

Used by the API (checks at save), the store and the activities alike; it knows nothing of
campaigns, workflows or the database.
"""
