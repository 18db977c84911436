"""The Library's routes: /kiri/v1/library (search, one picture, its file and thumbnail, favourite,
delete to the trash, restore, reproduce). Owner rules as in the UI (engine/library): with logins each
login lists and fetches only its own pictures, an --admin login all; someone else's id answers 404,
the same as an id that does not exist."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from webui.engine.library import NotFound, open_library

from .common import ApiContext, KiriRoute


def build_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(prefix="/kiri/v1", tags=["library"], dependencies=ctx.dependencies(), route_class=KiriRoute)

    def library():
        found = open_library(ctx.engine.settings)
        found.admins = set(ctx.admins)
        return found

    def guarded(call, *args: Any) -> Any:
        try:
            return call(*args)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @router.get("/library")
    def search(http: Request, q: str = "", tab: str = "", model: str = "", sampler: str = "", lora: str = "", size: str = "",
               date_from: str = "", date_to: str = "", favourite: bool = False, cursor: str = "", limit: int = 60,
               similar_to: int | None = None) -> dict:
        """A page of your pictures, newest first; `next` is the cursor of the following page (null at the end).
        `q`: words, "a phrase", AND/OR/NOT over prompt, negative prompt and LoRA names. `similar_to` (a
        picture's id): the pictures that look most like it first (colours and layout)."""
        lib = library()
        return guarded(lambda: lib.search(ctx.viewer(http), q=q, tab=tab, model=model, sampler=sampler, lora=lora,
                                          size=size, date_from=date_from, date_to=date_to, favourite=favourite,
                                          cursor=cursor, limit=limit, similar_to=similar_to))

    @router.get("/library/choices")
    def choices(http: Request) -> dict:
        return library().choices(ctx.viewer(http))

    @router.get("/library/trash")
    def trash(http: Request) -> dict:
        return {"items": library().trash(ctx.viewer(http))}

    @router.post("/library/trash/{name}/restore")
    def restore(name: str, http: Request) -> dict:
        return guarded(library().restore, ctx.viewer(http), name)

    @router.delete("/library/trash")
    def empty(http: Request) -> dict:
        return {"removed": library().empty_trash(ctx.viewer(http))}

    @router.get("/library/{item_id}")
    def item(item_id: int, http: Request) -> dict:
        found = guarded(library().item, ctx.viewer(http), item_id)
        path = found.pop("path")
        found["file"] = f"/kiri/v1/library/{item_id}/file"
        found["thumbnail"] = f"/kiri/v1/library/{item_id}/thumbnail"
        if not ctx.exposed:
            found["path"] = path
        return found

    @router.get("/library/{item_id}/file")
    def file(item_id: int, http: Request):
        path = guarded(library().file, ctx.viewer(http), item_id)
        return FileResponse(path, filename=path.name)

    @router.get("/library/{item_id}/thumbnail")
    def thumbnail(item_id: int, http: Request):
        path = guarded(library().thumbnail, ctx.viewer(http), item_id)
        if path is None:
            raise HTTPException(status_code=404, detail="no thumbnail for this item")
        return FileResponse(path, media_type="image/webp")

    @router.delete("/library/{item_id}")
    def delete(item_id: int, http: Request) -> dict:
        return guarded(library().delete, ctx.viewer(http), item_id)

    @router.post("/library/{item_id}/favourite")
    def favourite(item_id: int, http: Request, on: bool = True) -> dict:
        return guarded(library().favourite, ctx.viewer(http), item_id, on)

    @router.get("/library/{item_id}/reproduce")
    def reproduce(item_id: int, http: Request) -> dict:
        """{"endpoint": "/sdapi/v1/txt2img", "body": {...}, "notes": [...]}: POST the body there to make it again.
        The checkpoint is picked by the picture's Model hash (a renamed file is found); an img2img picture's
        body carries its kept init image (and mask), and a picture made with ControlNet units the units with their
        kept control pictures (alwayson_scripts.controlnet)."""
        return guarded(library().reproduce, ctx.viewer(http), item_id, ctx.engine.catalog, ctx.engine.addons)

    return router
