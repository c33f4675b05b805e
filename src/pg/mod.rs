//! PostgreSQL sources and targets (issue 4: being implemented).
