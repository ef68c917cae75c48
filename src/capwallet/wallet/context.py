"""Everything a wallet request handler needs, built once by the server."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from capwallet.store.base import Store
from capwallet.verify import Verifier
from capwallet.wallet.client_metadata import ClientMetadataFetcher
from capwallet.wallet.codes import CodeBook
from capwallet.wallet.consents import Consents
from capwallet.wallet.deployment import Deployment
from capwallet.wallet.grants import GrantStore
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.pages import Pages
from capwallet.wallet.sessions import BrowserSessions
from capwallet.wallet.signin_state import SignIn


@dataclass
class WalletContext:
    home: WalletHome
    keystore: Keystore
    grants: GrantStore
    store: Store
    pages: Pages
    sessions: BrowserSessions
    codes: CodeBook = field(default_factory=CodeBook)
    consents: Consents = field(default_factory=Consents)
    relay_url: str = ""  # empty: the relay is this server, at the URL the app called
    clock: Callable[[], int] = field(default=lambda: int(time.time()))
    verifier: Verifier | None = None
    deployment: Deployment = field(default_factory=Deployment)
    client_metadata: ClientMetadataFetcher = field(default_factory=ClientMetadataFetcher)
    signin: SignIn | None = None  # passkeys and the passphrase fallback (hosted profile)

    def __post_init__(self) -> None:
        if self.verifier is None:
            self.verifier = Verifier(self.keystore.keyring())

    def now(self) -> int:
        return self.clock()

