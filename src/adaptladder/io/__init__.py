"""Reading the user's files, for every task kind."""
