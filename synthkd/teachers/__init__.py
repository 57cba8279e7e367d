"""Teachers: the only code in synthkd that talks to a model."""

from synthkd.teachers.base import (
    BudgetExceeded,
    Teacher,
    TeacherConfigError,
    TeacherFatalError,
    TeacherRequest,
    TeacherResult,
    Usage,
)

__all__ = ["BudgetExceeded", "Teacher", "TeacherConfigError", "TeacherFatalError", "TeacherRequest", "TeacherResult", "Usage"]
